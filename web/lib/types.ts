/** The shapes of the public contract (API.md) this client reads. */

export interface Campus {
  id: string;
  name: string;
  city?: string;
  email_domain?: string;
}

export interface Interest {
  id: string;
  name: string;
  category?: string;
}

export interface Photo {
  photo_id: string;
  url: string;
  width?: number;
  height?: number;
}

export type Gender = "woman" | "man" | "nonbinary";

export interface AccountUser {
  user_id: string;
  email: string;
  display_name?: string;
  role: string;
  is_verified: boolean;
  created_at: string;
}

export interface OwnProfile {
  display_name: string | null;
  bio: string | null;
  gender: Gender | null;
  interested_in: Gender[];
  campus: Campus | null;
  year_of_study: number | null;
  interests: Interest[];
  photos: Photo[];
  birthdate: string | null;
  is_visible: boolean;
}

export interface Me {
  user: AccountUser;
  profile: OwnProfile;
  profile_complete: boolean;
  missing: string[];
}

export interface Card {
  user_id: string;
  display_name: string;
  campus: Campus | null;
  year_of_study: number | null;
  bio?: string | null;
  interests: Interest[];
  photos: Array<Photo | string>;
  score?: number;
}

export interface LastMessage {
  message_id: string;
  seq: number;
  sender_id: string;
  body: string;
  created_at: string;
}

export interface MatchSummary {
  match_id: string;
  user: Card;
  last_message: LastMessage | null;
  unread_count: number;
  created_at: string;
}

export interface HistoryMessage {
  message_id: string;
  seq: number;
  sender_id: string;
  body: string;
  client_msg_id: string | null;
  created_at: string;
  delivered_at: string | null;
  read_at: string | null;
}

export interface Notification {
  id: string;
  kind: string;
  payload: Record<string, unknown> | null;
  is_read: boolean;
  created_at: string;
}

export const GENDERS: Array<{ value: Gender; label: string }> = [
  { value: "woman", label: "Woman" },
  { value: "man", label: "Man" },
  { value: "nonbinary", label: "Non-binary" },
];

export const REPORT_REASONS = [
  { value: "spam", label: "Spam" },
  { value: "harassment", label: "Harassment" },
  { value: "fake_profile", label: "Fake profile" },
  { value: "inappropriate_content", label: "Inappropriate content" },
  { value: "underage", label: "Under 18" },
  { value: "other", label: "Something else" },
] as const;

export function photoUrl(photo: Photo | string): string {
  return typeof photo === "string" ? photo : photo.url;
}
